"""Reading results: comparison reports, tables, intervals, plots, the leaderboard, published numbers."""
