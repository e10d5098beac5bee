"""A record's file goes with the record: a deleted survey leaves no cutout or model file behind.

Connected to ``post_delete`` of :class:`~catalogue.models.Image` (its FITS cutout) and
:class:`~catalogue.models.TrainedModel` (its .keras or pickled file) in ``CatalogueConfig.ready``.
The file is deleted once the deletion has committed (a rolled-back deletion keeps it), on any
storage: on a bucket, nothing else would ever find it again.
"""

from __future__ import annotations

from django.db import transaction


def delete_file_after_commit(sender, instance, **_kwargs) -> None:  # noqa: ARG001 - signal signature
    """Delete the record's file (``file`` or ``artifact``) once the deletion of the record has committed."""
    field = getattr(instance, "file", None) or getattr(instance, "artifact", None)
    if not field or not field.name:
        return
    storage, name = field.storage, field.name

    def delete() -> None:
        if storage.exists(name):
            storage.delete(name)

    transaction.on_commit(delete)
