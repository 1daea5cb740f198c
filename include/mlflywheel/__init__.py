"""mlflywheel core: pipelines from landing data to a registered model, without Airflow.

Importing this package is cheap on purpose (DAG files import it at parse time): heavy
libraries are imported inside the functions that use them.
"""

from __future__ import annotations

__version__ = "0.1.0"
