"""The training library: loop, steps, schedules, objectives, methods, devices."""
