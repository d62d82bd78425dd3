"""Connection pool observation (SQLAlchemy and psycopg_pool), limits, warm-up checks and sizing."""
