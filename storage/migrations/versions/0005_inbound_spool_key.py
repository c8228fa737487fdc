"""The intake spool: the key of the spool entry an inbound row was filed from.

``serve`` on SQLite answers 250 once a message is in its spool (storage/spool.py);
the worker files spooled messages into ``inbound``. The unique key makes filing
an entry twice (a worker that died before forgetting it) impossible.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 02:30:00.000000
"""
import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('inbound', sa.Column('spool_key', sa.String(length=32), nullable=True))
    op.create_index('ix_inbound_spool_key', 'inbound', ['spool_key'], unique=True)


def downgrade() -> None:
    op.drop_index('ix_inbound_spool_key', table_name='inbound')
    with op.batch_alter_table('inbound', schema=None) as batch_op:
        batch_op.drop_column('spool_key')
