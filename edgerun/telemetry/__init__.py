"""Service telemetry: power, energy per rail and per model, temperatures, throttling, CPU frequency."""
