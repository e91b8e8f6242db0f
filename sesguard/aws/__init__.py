"""The AWS edges: clients and their errors, the table and what is stored in it (partners,
held jobs, lifecycle events), sending jobs to SQS and dead-lettering.

Imports the core and the foundation (settings, logging) only (tests/test_layout.py).
"""
