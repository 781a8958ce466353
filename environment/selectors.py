"""Reads of the environment's metadata. Datasets are visible to every signed-in user."""

from tre.errors import NotFound

from .models import Dataset, DatasetVersion


def dataset_list():
    return Dataset.objects.select_related("current_version", "created_by").order_by("name")


def dataset_get(*, pk) -> Dataset:
    dataset = dataset_list().filter(pk=pk).first()
    if dataset is None:
        raise NotFound("no such dataset")
    return dataset


def version_list(*, dataset):
    return (DatasetVersion.objects.filter(dataset=dataset).select_related("dataset", "created_by")
            .order_by("-number"))


def version_get(*, dataset, pk) -> DatasetVersion:
    version = version_list(dataset=dataset).filter(pk=pk).first()
    if version is None:
        raise NotFound("no such version of this dataset")
    return version
