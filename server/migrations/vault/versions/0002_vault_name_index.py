"""vault: blind indexes of the last name and of "first last", for name search at the desk

Revision ID: 0002_vault_name_index
Revises: 0001_vault
Create Date: 2026-11-25 09:00:00

The columns start empty: ``flask privacy reindex`` fills them for the customers enrolled
before (a migration holds no key to compute them).
"""

import sqlalchemy as sa
from alembic import op

revision = '0002_vault_name_index'
down_revision = '0001_vault'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vault_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_name_index', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('full_name_index', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_vault_records_last_name_index'),
                              ['last_name_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_vault_records_full_name_index'),
                              ['full_name_index'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('vault_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vault_records_full_name_index'))
        batch_op.drop_index(batch_op.f('ix_vault_records_last_name_index'))
        batch_op.drop_column('full_name_index')
        batch_op.drop_column('last_name_index')
