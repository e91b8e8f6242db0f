"""Operator tooling: bootstrap, reports, partner operations, IAM permissions, the DLQ tools
and the console. Built on core, aws, domain and runtime.
"""
