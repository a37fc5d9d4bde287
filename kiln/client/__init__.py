"""kiln.client: kiln's JSON API from Python, for notebooks and scripts.

    from kiln.client import Client
    kiln = Client()                      # $KILN_URL or http://127.0.0.1:5000; $KILN_TOKEN if set
    kiln.login("fred")
    ds = kiln.create_dataset("mnist", "/data/mnist/train", test_folder="/data/mnist/test",
                             resize_channels=1, resize_width=28, resize_height=28, wait=True)
    model = kiln.create_model("lenet", ds, "lenet", train_epochs=10, wait=True)
    kiln.metrics(model)                  # a DataFrame (pandas installed) or a list of dicts
    print(kiln.classify(model, "digit.png"))   # 8 : 99.69 % ...

Every refusal raises a KilnError subclass carrying the server's message, HTTP status and, for
forms, ``errors`` by field.
"""

from kiln.client.core import DEFAULT_URL, Client, Job, Prediction, Predictions
from kiln.client.errors import (
    BadRequest,
    Busy,
    Forbidden,
    JobFailed,
    KilnError,
    NotFound,
    ServerError,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    Unreachable,
    WaitTimeout,
)
from kiln.client.images import labelled_zip, png_bytes

__all__ = [
    "DEFAULT_URL",
    "BadRequest",
    "Busy",
    "Client",
    "Forbidden",
    "Job",
    "JobFailed",
    "KilnError",
    "NotFound",
    "Prediction",
    "Predictions",
    "ServerError",
    "TooLarge",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "Unreachable",
    "WaitTimeout",
    "labelled_zip",
    "png_bytes",
]
