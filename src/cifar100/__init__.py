"""cifar100: train our own CNN on CIFAR-100, see how it went, and use it on your photos.

    import cifar100
    run = cifar100.train(preset="cpu")      # or cifar100.load_run("runs/<name>")
    model = cifar100.load_pretrained()      # the CIFAR-100 model that ships with the package
    model.predict("photo.jpg")

The API (cifar100/api.py) is imported on first use, so `import cifar100` and the command
line's start stay quick."""

__version__ = "0.1.0"

__all__ = ["Model", "Run", "__version__", "class_distribution", "load_dataset", "load_model", "load_pretrained",
           "load_run", "train"]
_API = {"train", "load_run", "load_dataset", "load_model", "load_pretrained", "class_distribution", "Run", "Model"}


def __getattr__(name: str):
    if name in _API:
        from cifar100 import api

        return getattr(api, name)
    raise AttributeError(f"module 'cifar100' has no attribute {name!r}")
