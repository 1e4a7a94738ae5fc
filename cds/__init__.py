"""Clinical decision support for back neuropathy and back numbness.

The package is layered; data flows one way and nothing lower imports
anything higher:

    domain -> knowledge -> fhir -> engine -> evaluation -> cli / api / audit / web

``domain`` and ``knowledge`` import only the standard library and PyYAML;
``engine`` is the only module that imports durable-rules.
"""

__version__ = "0.1.0"
