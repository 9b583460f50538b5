"""dualshift: consolidate the tables of a live Supabase/PostgreSQL database with zero downtime."""

__version__ = "0.1.0"
