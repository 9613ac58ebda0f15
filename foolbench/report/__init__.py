"""Reports: champion images and galleries (`gallery`), and the `foolbench report` folder (`write`).

`write_report` is imported on first use, so that importing `foolbench.report.gallery` (as every run
does) does not pull in the report's tables and plots.
"""


def __getattr__(name: str):
    if name == "write_report":
        from foolbench.report.write import write_report

        return write_report
    raise AttributeError(f"module 'foolbench.report' has no attribute '{name}'")
