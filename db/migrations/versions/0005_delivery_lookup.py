"""Deliveries found by their prediction and state (the worklist's "delivered?" test).

Without it SQLite, lacking statistics on a young database, answered "has this study a
sent delivery?" through ``ix_deliveries_due (state, ...)``: a scan of every sent delivery
for each study on the page (270 ms for the first worklist page at 10,000 studies). With
it the lookup goes prediction -> its deliveries (14 ms).

Revision ID: 0005_delivery_lookup
Revises: 0004_web_access
"""

from alembic import op

revision = "0005_delivery_lookup"
down_revision = "0004_web_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_prediction_state", "deliveries", ["prediction_id", "state"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_prediction_state", table_name="deliveries")
