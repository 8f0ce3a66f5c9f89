"""The face: what people use to see and steer flow webhooks: the command line and the UI plugins."""
