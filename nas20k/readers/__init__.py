"""The readers: what a trial records, and the tables, reports and exports read from it; they never run a study."""
