"""Shared fixtures live in two plugin modules: data fixtures (archives in the official formats,
the mini CIFAR-100, local HTTP servers, image folders) and run fixtures (small trained runs)."""

pytest_plugins = ["data_fixtures", "run_fixtures"]
