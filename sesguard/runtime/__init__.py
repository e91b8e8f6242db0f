"""What both services run on: the consumer loop and its parts."""
