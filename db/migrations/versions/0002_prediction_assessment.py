"""Predictions say whether they were assessed, in the bundle's domain, and why not.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows stored before the check existed were judged as they came: assessed, in domain.
    op.add_column(
        "predictions",
        sa.Column("assessed", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column(
        "predictions",
        sa.Column("in_domain", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column("predictions", sa.Column("domain_score", sa.Float(), nullable=True))
    op.add_column(
        "predictions",
        sa.Column("reasons", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
    )


def downgrade() -> None:
    for column in ("reasons", "domain_score", "in_domain", "assessed"):
        op.drop_column("predictions", column)
