"""Timers, bounces, quarantine reasons and template overrides.

New NOT NULL columns carry server defaults so that existing rows upgrade.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 21:37:59.138880
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
import storage.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('template_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('locale', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('body_text', sa.Text(), nullable=True),
    sa.Column('body_html', sa.Text(), nullable=True),
    sa.Column('author', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('template_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_template_version_name'), ['name'], unique=False)
        batch_op.create_index('ux_template_version', ['name', 'locale', 'version'], unique=True)

    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bouncing', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('bounced_at', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('bounce_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=''))

    with op.batch_alter_table('inbound', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reason_code', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('auth', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('released_at', storage.models.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auto_submitted', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default='auto-generated'))

    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_customer_at', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('awaiting_since', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('status_request_sent_at', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('first_response_due_at', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('first_responded_at', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('first_response_warning', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index(batch_op.f('ix_ticket_awaiting_since'), ['awaiting_since'], unique=False)
        batch_op.create_index(batch_op.f('ix_ticket_first_response_due_at'), ['first_response_due_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ticket_first_response_due_at'))
        batch_op.drop_index(batch_op.f('ix_ticket_awaiting_since'))
        batch_op.drop_column('first_response_warning')
        batch_op.drop_column('first_responded_at')
        batch_op.drop_column('first_response_due_at')
        batch_op.drop_column('status_request_sent_at')
        batch_op.drop_column('awaiting_since')
        batch_op.drop_column('last_customer_at')

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('auto_submitted')

    with op.batch_alter_table('inbound', schema=None) as batch_op:
        batch_op.drop_column('released_at')
        batch_op.drop_column('auth')
        batch_op.drop_column('reason_code')

    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_column('bounce_reason')
        batch_op.drop_column('bounced_at')
        batch_op.drop_column('bouncing')

    with op.batch_alter_table('template_version', schema=None) as batch_op:
        batch_op.drop_index('ux_template_version')
        batch_op.drop_index(batch_op.f('ix_template_version_name'))

    op.drop_table('template_version')
