"""Archive services: the Ray Data search, the index and its search, the report, the review
of sightings and the Ray runtime they share. The CLI (jobs/cli/) calls them; they do not
print to the terminal or parse options themselves."""
