"""Out-of-order arrival: an index on message_reference by the time a note was written.

The timers delete notes older than ``[desk] late_parent_days`` in small batches; the
index finds them without reading the whole table, and finds none in a few page reads
on the (usual) tick with nothing to delete.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:00:00.000000
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('message_reference', schema=None) as batch_op:
        batch_op.create_index('ix_message_reference_created_at', ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('message_reference', schema=None) as batch_op:
        batch_op.drop_index('ix_message_reference_created_at')
