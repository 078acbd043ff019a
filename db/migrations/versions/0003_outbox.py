"""The delivery outbox: retry times, spooled documents, acknowledgement, new state words.

Revision ID: 0003_outbox
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_outbox"
down_revision = "0002"
branch_labels = None
depends_on = None

# Old state words -> new (the outbox had no writer before this revision).
RENAMED = {"delivered": "sent", "failed": "retrying", "abandoned": "dead"}


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("delivered_at", new_column_name="acknowledged_at")
        batch.add_column(
            sa.Column(
                "next_attempt_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.current_timestamp(),
            )
        )
        batch.add_column(sa.Column("result_dir", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("document_uids", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.current_timestamp(),
            )
        )
        batch.create_index("ix_deliveries_due", ["state", "next_attempt_at"], unique=False)
    # The model sets these on every insert; the server defaults only filled existing rows.
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("next_attempt_at", server_default=None)
        batch.alter_column("document_uids", server_default=None)
        batch.alter_column("updated_at", server_default=None)
    deliveries = sa.table("deliveries", sa.column("state", sa.String))
    for old, new in RENAMED.items():
        op.execute(deliveries.update().where(deliveries.c.state == old).values(state=new))


def downgrade() -> None:
    deliveries = sa.table("deliveries", sa.column("state", sa.String))
    for old, new in RENAMED.items():
        op.execute(deliveries.update().where(deliveries.c.state == new).values(state=old))
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_due")
        for column in ("updated_at", "document_uids", "result_dir", "next_attempt_at"):
            batch.drop_column(column)
        batch.alter_column("acknowledged_at", new_column_name="delivered_at")
