"""Great Expectations gates of the pipeline: suites (``suites``), the frames they check
(``frames``) and the runner that builds Data Docs and a readable summary (``runner``)."""
