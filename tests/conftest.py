pytest_plugins = [
    "tests.support.fixtures_server",
    "tests.support.fixtures_pcsc",
    "tests.support.fixtures_devices",
    "tests.support.services",
]
