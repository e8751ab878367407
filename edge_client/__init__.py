"""The device side of fedge: numpy, a TFLite runtime and paho-mqtt; never TensorFlow.

Nothing is re-exported here: import from the modules, whose names are the public
names of the package. The aggregator may import only the wire modules (``protocol``,
``transfer``, ``quantize``, ``signing``, ``errors``, ``transport``, ``model`` and
``probe``, the shared ``settings`` and ``files``, and ``scoring``/``score_counts`` to sum
sites' evaluation counts); nothing here imports from the rest of fedge.
"""

__all__ = [
    "admission",  # which model files a device loads: checked, probed once, refusals kept
    "client",  # the participation loop, written against small ports
    "config",  # ClientConfig, built once by __main__
    "data",  # local data files: CSV, NPZ, time-series CSV
    "device",  # wires a ClientConfig into a running client
    "encode",  # a CSV read onto the federation schema: imputation, one-hot
    "errors",  # the roots of the one exception tree
    "feature_stats",  # federated table statistics: site summaries that add up exactly
    "files",  # the one atomic write
    "flatbuffer",  # a bounds-checked reader of the TFLite flatbuffer
    "model",  # a trainable .tflite model on the runtime
    "model_check",  # what a model file passes before an interpreter sees it
    "model_file",  # the metadata a .tflite file carries
    "normalise",  # normalisation statistics computed on the device
    "probe",  # the crash-proof first load of a model file, in a child process
    "protocol",  # THE wire format: topics, messages, ids, strict CBOR
    "quantize",  # update codecs and error feedback
    "runtime",  # the only adapter over a TFLite interpreter
    "schema",  # the federation-wide data schema (TOML, model metadata)
    "score_counts",  # evaluation counts that sites add exactly (federated evaluation)
    "scoring",  # accuracy, ROC/PR AUC, log loss, calibration, regression errors
    "settings",  # the one reader of TOML, flags and secrets
    "signing",  # Ed25519 manifest signatures (needs cryptography)
    "state",  # the client's state directory
    "table",  # a CSV table read in bounded memory, block by block
    "training",  # one round of local training
    "transfer",  # chunked transfers: split and reassemble
    "transport",  # the only module that imports paho
]
