"""Federation: adapters to and from Flower records, one site's train/evaluate step,
aggregation, checkpoints. Only this layer and the entry points import ``flwr``; the
site step (``site.py``) does not, so it is tested without Flower."""
