"""The techniques, one module each: :mod:`.activations` (intermediate outputs), :mod:`.filters`
(gradient ascent, with its recipes in :mod:`.filter_recipes`) and :mod:`.cams` (class activation
maps). They compute tensors and never draw or write files."""
