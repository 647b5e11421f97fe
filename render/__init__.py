"""The offline render: this program under the Pulumi SDK's mock engine, written out and validated.

It is to sophia-infra what `helm template` is to a chart: no CLI, no machines, no ESC account.
"""
