"""Loop limits: an index on the outbox by recipient and time.

The automatic-mail counts of gateway/loops.py read only the recent mail to the
addresses of one notification batch instead of every outbox row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:00:00.000000
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_recipients_created', ['recipients', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_recipients_created')
