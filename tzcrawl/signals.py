"""tzcrawl's own signals."""

# Sent by the pipeline when a personality cannot be backed up now (its lock is held by another
# run); arguments: username, reason. Spiders stop requesting that personality's resources.
personality_skipped = object()

# Sent by the pipeline once a resource is saved or has failed; arguments: personality (dict),
# resource, ok (bool), figures (dict: total, new, requests, characters, ...), error (str or None).
resource_finished = object()
