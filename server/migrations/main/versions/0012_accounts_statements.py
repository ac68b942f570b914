"""accounts and statements: account customers, payments on account, monthly statements,
and how a purchase was paid

Revision ID: 0012_accounts_statements
Revises: 0011_value_segments
Create Date: 2026-11-24 14:27:57
"""

import sqlalchemy as sa
from alembic import op

revision = '0012_accounts_statements'
down_revision = '0011_value_segments'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'accounts',
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('credit_limit_cents', sa.Integer(), nullable=False),
        sa.Column('terms_days', sa.Integer(), nullable=False),
        sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('opened_by', sa.String(length=64), nullable=False),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint('credit_limit_cents >= 0', name=op.f('ck_accounts_credit_limit')),
        sa.CheckConstraint('terms_days >= 0', name=op.f('ck_accounts_terms_days')),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                                name=op.f('fk_accounts_customer_id_customers')),
        sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_accounts')),
    )
    op.create_table(
        'statements',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('month', sa.String(length=7), nullable=False),
        sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
        sa.Column('due_by', sa.DateTime(timezone=True), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('opening_cents', sa.Integer(), nullable=False),
        sa.Column('purchases_cents', sa.Integer(), nullable=False),
        sa.Column('refunds_cents', sa.Integer(), nullable=False),
        sa.Column('payments_cents', sa.Integer(), nullable=False),
        sa.Column('closing_cents', sa.Integer(), nullable=False),
        sa.Column('due_date', sa.Date(), nullable=False),
        sa.Column('points_earned', sa.Integer(), nullable=False),
        sa.Column('points_spent', sa.Integer(), nullable=False),
        sa.Column('points_balance', sa.Integer(), nullable=False),
        sa.Column('tier', sa.String(length=32), nullable=False),
        sa.Column('language', sa.String(length=2), nullable=False),
        sa.Column('document', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('send_attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                                name=op.f('fk_statements_customer_id_customers')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_statements')),
        sa.UniqueConstraint('customer_id', 'month', name='uq_statements_customer_month'),
    )
    with op.batch_alter_table('statements', schema=None) as batch_op:
        batch_op.create_index('ix_statements_sent_at', ['sent_at'], unique=False)
    op.create_table(
        'account_payments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.String(length=36), nullable=False),
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('amount_cents', sa.Integer(), nullable=False),
        sa.Column('method', sa.String(length=16), nullable=True),
        sa.Column('reference', sa.String(length=64), nullable=True),
        sa.Column('paid_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=True),
        sa.Column('staff_id', sa.Integer(), nullable=True),
        sa.Column('recorded_by', sa.String(length=64), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('amount_cents > 0',
                           name=op.f('ck_account_payments_amount_positive')),
        sa.ForeignKeyConstraint(['customer_id'], ['accounts.customer_id'],
                                name=op.f('fk_account_payments_customer_id_accounts')),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_account_payments_device_id_devices')),
        sa.ForeignKeyConstraint(['staff_id'], ['staff.id'],
                                name=op.f('fk_account_payments_staff_id_staff')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_account_payments')),
        sa.UniqueConstraint('event_id', name=op.f('uq_account_payments_event_id')),
    )
    with op.batch_alter_table('account_payments', schema=None) as batch_op:
        batch_op.create_index('ix_account_payments_customer_paid', ['customer_id', 'paid_at'],
                              unique=False)
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payment', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_column('payment')
    with op.batch_alter_table('account_payments', schema=None) as batch_op:
        batch_op.drop_index('ix_account_payments_customer_paid')
    op.drop_table('account_payments')
    with op.batch_alter_table('statements', schema=None) as batch_op:
        batch_op.drop_index('ix_statements_sent_at')
    op.drop_table('statements')
    op.drop_table('accounts')
