"""Browser tests: the dashboard in headless Chromium, driven by Playwright."""
