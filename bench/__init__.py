"""The Postdesk benchmark: a generated corpus, a loopback SMTP load generator and a report.

Run it with ``python bench/run.py --help``; the README's "Benchmark" section explains the figures.
Nothing here is imported by the gateway.
"""
