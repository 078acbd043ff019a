"""Web app access: users (token hashes), sessions, sign-in failures, acknowledgements.

Revision ID: 0004_web_access
Revises: 0003_outbox
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_web_access"
down_revision = "0003_outbox"
branch_labels = None
depends_on = None

_ROLE = sa.Enum(
    "radiologist", "auditor", "admin", name="webrole", native_enum=False, length=16
)


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", _ROLE, nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_sha256"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_sha256", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["web_users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_sha256"),
    )
    op.create_table(
        "web_sign_in_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_sign_in_failures_address_at", "web_sign_in_failures", ["address", "at"], unique=False
    )
    op.create_table(
        "web_acknowledgements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("study_version", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["web_users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id", "study_version", "user_id", name="uq_acknowledgement_key"),
    )
    # The worklist sorts by arrival and ranks by the newest result's priority (read from
    # the index alone); the audit log reads by time.
    op.create_index("ix_studies_first_received", "studies", ["first_received_at"], unique=False)
    op.create_index(
        "ix_predictions_latest",
        "predictions",
        ["study_id", "shadow", "id", "priority"],
        unique=False,
    )
    op.create_index("ix_audit_at", "audit_events", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_predictions_latest", table_name="predictions")
    op.drop_index("ix_audit_at", table_name="audit_events")
    op.drop_index("ix_studies_first_received", table_name="studies")
    op.drop_table("web_acknowledgements")
    op.drop_index("ix_sign_in_failures_address_at", table_name="web_sign_in_failures")
    op.drop_table("web_sign_in_failures")
    op.drop_table("web_sessions")
    op.drop_table("web_users")
