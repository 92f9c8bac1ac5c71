"""The code behind the sweep, report and sweep_report commands."""
