"""Out-of-order arrival: Message-IDs named but not yet seen, and how long a reply waits for its parent.

The new column is nullable, so existing rows upgrade unchanged.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 21:53:28.207371
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
import storage.models


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('message_reference',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('referenced', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('inbound_id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('created_at', storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound.id'], ),
    sa.ForeignKeyConstraint(['ticket_id'], ['ticket.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('message_reference', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_message_reference_inbound_id'), ['inbound_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_message_reference_referenced'), ['referenced'], unique=False)

    with op.batch_alter_table('inbound', schema=None) as batch_op:
        batch_op.add_column(sa.Column('wait_until', storage.models.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('inbound', schema=None) as batch_op:
        batch_op.drop_column('wait_until')

    with op.batch_alter_table('message_reference', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_reference_referenced'))
        batch_op.drop_index(batch_op.f('ix_message_reference_inbound_id'))

    op.drop_table('message_reference')
