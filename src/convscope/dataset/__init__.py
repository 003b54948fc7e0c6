"""Whole datasets: a folder of images streamed through the model into resumable Parquet shards.

:mod:`.sources` finds the images and their true classes, :mod:`.shards` holds the manifest, the
settings and the shard writing both engines share, :mod:`.pipeline` runs a dataset on the local
engine (this process and its DataLoader workers) and :mod:`.ray_engine` on Ray actors,
:mod:`.channel_examples` keeps each channel's top images and writes their crops, :mod:`.report` writes
the dataset's static pages; :mod:`.atlas` joins a dataset run with every unit's feature picture
(picture shards on the same engines) and :mod:`.atlas_site` writes its site; :mod:`.batches`
halves a batch that runs out of device memory. Maps come from :mod:`convscope.techniques`, pictures from
:mod:`convscope.presentation`; the command line is not imported here.

From Python: ``convscope.dataset.run(model, source, out, **options)`` (the fields of
:class:`~.pipeline.DatasetOptions`), ``convscope.dataset.load(out)`` and
``convscope.dataset.channel_examples(out, layer, channel)``; ``convscope.atlas(model, dataset, out,
**options)`` (the fields of :class:`~.atlas.AtlasOptions`).
"""

from .atlas import AtlasOptions
from .pipeline import DatasetOptions, examples, run
from .shards import load, summary

__all__ = ["AtlasOptions", "DatasetOptions", "examples", "load", "run", "summary"]
