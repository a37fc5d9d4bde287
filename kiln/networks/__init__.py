"""Networks: one registry for every network, whether written in Python or as Caffe text.

Importing this package registers the standard networks, in the order DIGITS lists them.
"""

# isort: skip_file
# Registration order is the order pages list them (DIGITS': LeNet, AlexNet, GoogLeNet): keep it.
from . import standard_texts, resnet, lenet, alexnet, googlenet  # noqa: F401  (registration side effects)
from .registry import (
    NetworkInfo,
    count_parameters,
    create_network,
    get_network_info,
    list_networks,
    register_builder,
    register_network,
)

__all__ = [
    "NetworkInfo",
    "count_parameters",
    "create_network",
    "get_network_info",
    "list_networks",
    "register_builder",
    "register_network",
]
