"""K3sCluster: the configured machines become one K3s cluster, over SSH.

Each machine is a `K3sNode` component named exactly as the node, whose steps are `remote.Command`s
named `<node>-<step>` (scripts in node_config.py and scripts/). The dependency graph is flat on
purpose: every node's preflight starts at once; every joining node (agent or extra server) waits
for the first server, an agent's install also for the other servers (below), and no node ever waits
for an agent. So the longest chain of SSH steps is the same for 5 machines as for 50:

    first:  preflight → prepare → install → ready → admit, kubeconfig, server-token, agent-token
    others: preflight ─┐
       first ready ────┴→ claim ─┐
       first's token ────────────┴→ prepare → install → ready → admit

An agent's install also waits for every server's ready: K3s wants servers upgraded first, one at
a time, then agents (a kubelet must not be newer than the API server), and on an upgrade each
server's ready re-runs after its restart. Servers still join at once and restart in turn through
a Lease (install.sh); all agents restart at once after them.

`pulumi destroy` (or a machine leaving the configuration) deletes in the reverse order: admit's
delete drains the node, prepare's delete uninstalls K3s, claim's delete removes the Node object.
A drain that cannot finish fails and leaves the node uncordoned, so nothing after it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_random as random
from pulumi_command import remote

from components.cluster.node_config import Step, api_server_url, node_scripts
from components.settings.cluster import ClusterSettings, Node, Role

JOIN_TOKEN_LENGTH = 48


@dataclass(frozen=True)
class K3sClusterArgs:
    cluster: ClusterSettings
    ssh_private_key: pulumi.Output[str]
    """The SSH private key of the machines' user, from ESC; a secret Output."""


@dataclass(frozen=True)
class K3sNodeArgs:
    node: Node
    cluster: ClusterSettings
    connection: remote.ConnectionArgs
    """This machine."""
    first_server_connection: remote.ConnectionArgs
    """The first server, where the cluster-side steps (claim, admit) of every node run."""
    join_tokens: pulumi.Output[str]
    """What `prepare` reads on stdin (a secret): the token to join with and, on a server, the agent
    token on a second line. The first server gets the generated short tokens; every other node the
    secure (K10) token its first server wrote, so that it joins only a server that has the cluster's CA."""
    first_server_ready: remote.Command | None
    """None for the first server itself."""
    servers_ready: tuple[remote.Command, ...] = ()
    """For an agent: the ready step of every server; its install runs after them."""


def ssh_connection(node: Node, private_key: pulumi.Output[str]) -> remote.ConnectionArgs:
    """An SSH connection that verifies the machine's host key (pulumi-command >= 1.1 `hostKey`).

    With `host_key` set, the provider accepts only that key (golang.org/x/crypto/ssh FixedHostKey,
    and asks the server for that key type only); without it the provider would accept any key, the
    behaviour of every K3s installer we learned from. The key is the one in the stack settings.
    """
    return remote.ConnectionArgs(
        host=node.host,
        port=float(node.ssh_port),
        user=node.ssh_user,
        private_key=pulumi.Output.secret(private_key),
        host_key=node.host_key,
        dial_error_limit=10,
        per_dial_timeout=15,
    )


class K3sNode(pulumi.ComponentResource):
    """One machine's steps. Its Pulumi name is the node name (the render groups scripts by it)."""

    ready: remote.Command
    kubeconfig: pulumi.Output[str] | None
    secure_tokens: tuple[pulumi.Output[str], pulumi.Output[str]] | None
    """First server only: the secure server token and agent token K3s wrote (secret Outputs)."""

    def __init__(self, name: str, args: K3sNodeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:cluster:K3sNode", name, None, opts)
        node = args.node
        scripts = node_scripts(args.cluster, node)

        def step(
            step: Step,
            connection: remote.ConnectionArgs,
            create: str,
            depends_on: Sequence[pulumi.Resource],
            *,
            delete: str | None = None,
            stdin: pulumi.Input[str] | None = None,
            triggers: Sequence[pulumi.Input[object]] | None = None,
            secret_stdout: bool = False,
        ) -> remote.Command:
            return remote.Command(
                f"{name}-{step.value}",
                remote.CommandArgs(
                    connection=connection,
                    # Without an `update`, a changed input runs `create` again: every script is idempotent.
                    create=create,
                    delete=delete,
                    stdin=stdin,
                    triggers=list(triggers) if triggers is not None else None,
                    # The previous output would be offered through the SSH environment, which sshd
                    # refuses; and for the kubeconfig step it is a secret.
                    add_previous_output_in_env=False,
                    logging=remote.Logging.NONE if secret_stdout else remote.Logging.STDOUT_AND_STDERR,
                ),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=list(depends_on),
                    additional_secret_outputs=["stdout"] if secret_stdout else None,
                    # No ignore_changes on `connection`: pulumi-command 1.2.1 treats a changed
                    # connection (a rotated SSH key, a new address) as an in-place update that runs the
                    # idempotent `create` again and stores the new connection, and a later `delete`
                    # (drain, uninstall, Node removal) runs with the connection in state. Ignoring the
                    # change would keep a key that may no longer open the machine.
                ),
            )

        preflight = step(Step.PREFLIGHT, args.connection, scripts.preflight, [])
        before_prepare: list[pulumi.Resource] = [preflight]
        if args.first_server_ready is not None:
            assert scripts.claim is not None
            claim = step(
                Step.CLAIM,
                args.first_server_connection,
                scripts.claim,
                [preflight, args.first_server_ready],
                delete=scripts.remove,
            )
            before_prepare = [claim]
        prepare = step(
            Step.PREPARE,
            args.connection,
            scripts.prepare,
            before_prepare,
            delete=scripts.uninstall,
            stdin=pulumi.Output.secret(args.join_tokens),
        )
        install = step(
            Step.INSTALL,
            args.connection,
            scripts.install,
            [prepare, *args.servers_ready],
            triggers=scripts.install_triggers,
        )
        # A re-run install (new id) re-runs the waits after it.
        self.ready = step(Step.READY, args.connection, scripts.ready, [install], triggers=[install.id])
        # No triggers: a replaced admit would run its old delete, a drain, right after the new one
        # uncordoned the node, leaving every upgraded node drained. A changed label or taint changes
        # `create`, which pulumi-command runs again in place; an upgrade keeps labels and schedulability.
        step(Step.ADMIT, args.first_server_connection, scripts.admit, [self.ready], delete=scripts.drain)
        self.secure_tokens = None
        if scripts.server_token is not None and scripts.agent_token is not None:

            def read_token(which: Step, script: str) -> pulumi.Output[str]:
                read = step(which, args.connection, script, [self.ready], triggers=[self.ready.id], secret_stdout=True)
                token: pulumi.Output[str] = read.stdout.apply(lambda text: text.strip())
                return pulumi.Output.secret(token)

            self.secure_tokens = (
                read_token(Step.SERVER_TOKEN, scripts.server_token),
                read_token(Step.AGENT_TOKEN, scripts.agent_token),
            )
        self.kubeconfig = None
        if scripts.kubeconfig is not None:
            fetch = step(
                Step.KUBECONFIG,
                args.connection,
                scripts.kubeconfig,
                [self.ready],
                triggers=[self.ready.id],
                secret_stdout=True,
            )
            self.kubeconfig = pulumi.Output.secret(fetch.stdout)
        # What a reviewer of the render needs to see about the connection, which pulumi-command
        # keeps secret as a whole because the private key is part of it.
        self.register_outputs(
            {
                "host": node.host,
                "sshUser": node.ssh_user,
                "hostKey": node.host_key,
                "role": node.role.value,
                "ready": self.ready.id,
            }
        )


class K3sCluster(pulumi.ComponentResource):
    """The K3s cluster on the configured machines; hands back the admin kubeconfig as a secret."""

    kubeconfig: pulumi.Output[str]
    identifier: str
    """Which cluster this is, for the Kubernetes provider's `clusterIdentifier`: the first server
    initialises etcd and the cluster CA, so the cluster is the same while that machine is."""
    api_endpoint: str
    api_server_url: str
    node_names: list[str]
    nodes: dict[str, K3sNode]

    def __init__(self, name: str, args: K3sClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sophia:cluster:K3sCluster", name, None, opts)
        cluster = args.cluster
        # Explicit providers: nothing here depends on a default provider's ambient configuration.
        ssh = command.Provider(f"{name}-ssh", opts=pulumi.ResourceOptions(parent=self))
        randomness = random.Provider(f"{name}-random", opts=pulumi.ResourceOptions(parent=self))

        # Generated once and kept in the (encrypted) state: the same on every run, so re-runs never
        # see a different token. Letters and digits only: they go into files, never through a shell.
        # The server token joins servers and is full administrator access; the agent token only
        # joins agents (K3s `agent-token`), so an agent machine never holds the server token.
        def generated(resource_name: str) -> pulumi.Output[str]:
            token = random.RandomPassword(
                resource_name,
                random.RandomPasswordArgs(length=JOIN_TOKEN_LENGTH, special=False),
                opts=pulumi.ResourceOptions(parent=self, provider=randomness, additional_secret_outputs=["result"]),
            )
            return pulumi.Output.secret(token.result)

        server_token = generated(f"{name}-join-token")
        agent_token = generated(f"{name}-agent-token")
        connections = {n.name: ssh_connection(n, args.ssh_private_key) for n in cluster.nodes}
        first = cluster.first_server
        node_opts = pulumi.ResourceOptions(parent=self, providers={"command": ssh})

        def make(
            node: Node,
            join_tokens: pulumi.Output[str],
            first_ready: remote.Command | None,
            servers_ready: tuple[remote.Command, ...] = (),
        ) -> K3sNode:
            return K3sNode(
                node.name,
                K3sNodeArgs(
                    node=node,
                    cluster=cluster,
                    connection=connections[node.name],
                    first_server_connection=connections[first.name],
                    join_tokens=join_tokens,
                    first_server_ready=first_ready,
                    servers_ready=servers_ready,
                ),
                opts=node_opts,
            )

        first_node = make(first, pulumi.Output.format("{0}\n{1}\n", server_token, agent_token), None)
        assert first_node.secure_tokens is not None
        secure_server_token, secure_agent_token = first_node.secure_tokens
        self.nodes = {first.name: first_node}
        server_stdin: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.format("{0}\n{1}\n", secure_server_token, agent_token)
        )
        for node in cluster.servers:
            if node.name != first.name:
                self.nodes[node.name] = make(node, server_stdin, first_node.ready)
        servers_ready = tuple(self.nodes[n.name].ready for n in cluster.servers)
        agent_stdin: pulumi.Output[str] = pulumi.Output.secret(pulumi.Output.format("{0}\n", secure_agent_token))
        for node in cluster.nodes:
            if node.role is not Role.SERVER:
                self.nodes[node.name] = make(node, agent_stdin, first_node.ready, servers_ready)
        # The configured order, which the render and the stack outputs list the nodes in.
        self.nodes = {n.name: self.nodes[n.name] for n in cluster.nodes}
        assert first_node.kubeconfig is not None
        self.kubeconfig = pulumi.Output.secret(first_node.kubeconfig)
        self.identifier = f"k3s/{name}/{first.name}"
        self.api_endpoint = cluster.api_endpoint
        self.api_server_url = api_server_url(cluster)
        self.node_names = [n.name for n in cluster.nodes]
        self.register_outputs(
            {"kubeconfig": self.kubeconfig, "apiEndpoint": self.api_endpoint, "nodeNames": self.node_names}
        )
