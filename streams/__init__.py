"""Event contracts, the pure timer fold, the Faust agents and the scheduler."""
