"""One router per area of the console, each route small and returning a template."""
