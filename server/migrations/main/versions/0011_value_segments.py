"""value and segments: a region per store, saved segments

Revision ID: 0011_value_segments
Revises: 0010_tickets
Create Date: 2026-11-24 14:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0011_value_segments'
down_revision = '0010_tickets'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('region', sa.String(length=80), nullable=True))
    op.create_table(
        'segments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=120), nullable=False),
        sa.Column('definition', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_segments')),
        sa.UniqueConstraint('name', name=op.f('uq_segments_name')),
    )


def downgrade() -> None:
    op.drop_table('segments')
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.drop_column('region')
