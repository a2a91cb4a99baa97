import os

import pytest
import torch

# Under pytest-xdist each worker gets one intra-op thread, so two workers share the
# machine's cores instead of oversubscribing them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_split():
    """Digits (float64): 1000 training candidates and 597 held-out samples."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X = load_digits().data
    X_pool, X_test = train_test_split(X, test_size=597, random_state=0)
    return X_pool, X_test
