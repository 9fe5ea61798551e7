"""The conv-net family (issue 14), being built: so far its Keras-faithful building blocks
(:mod:`.blocks`); the family itself is not registered yet."""
