"""tzcrawl's own signals."""

# Sent by the pipeline once a resource is saved or has failed; arguments: personality (dict),
# resource (its registry name), outcome (items.Outcome), figures (dict: total, new, requests,
# characters, ...).
resource_finished = object()
