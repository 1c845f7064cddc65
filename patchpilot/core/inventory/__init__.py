"""Inventories: which hosts exist, how to reach them, and how to pick some.

:func:`load_inventory` reads four formats (from a file, or ``-`` for standard input) and always
returns an :class:`Inventory` of frozen :class:`~patchpilot.core.models.Host` records;
:func:`select_hosts` picks hosts by target and an Ansible-style ``--limit``. Given the ``ssh``
settings, it completes how each host is reached from ssh_config (see "Reaching hosts").

patchpilot format (YAML)
------------------------
::

    defaults:            # optional; settings for every host (lowest precedence)
      user: patchpilot
      port: 22
      key_file: ~/.ssh/id_ed25519      # "~" is expanded
      exposure: internal               # internet | internal | isolated
      criticality: 3                   # 1 (lowest) .. 5
    hosts:               # required; name -> settings (or nothing)
      web-1: {address: 127.0.0.2, port: 2201, tags: [web, prod], criticality: 4,
              exposure: internet, owner: team-web}
      db-1: {address: db1.example.internal, tags: [db]}
      local: {transport: local}        # runs commands on this machine
      app-1: {address: 10.0.3.1, jump: ["ops@bastion.example.com:2222"]}  # through a bastion
    groups:              # optional; name -> {hosts, children, vars}
      webservers: {hosts: [web-1], vars: {criticality: 4}}
      prod: {children: [webservers]}

Host keys: ``address`` (default: the host name; ``127.0.0.1`` for ``transport: local``),
``port``, ``user``, ``key_file``, ``known_hosts`` (an extra known_hosts file holding the host's
keys), ``transport`` (``ssh``/``local``), ``tags``, ``criticality``,
``exposure``, ``owner``, ``jump`` (jump hosts, first to last: a ProxyJump string
``"[user@]host[:port],..."``, or a list of such strings or of mappings with ``address``,
``port``, ``user``, ``key_file``; ``[]`` means "no jump host", overriding ssh_config).
``defaults`` and group ``vars`` take the same keys but ``address``.
Precedence: ``defaults`` < group vars (parents before children; same depth by name) < the host.
``tags`` add up across levels instead of overriding. A host's groups are the groups listing it
and, transitively, their parents; every group name is also a tag of its hosts.

The file is checked strictly: unknown keys, wrong types (``port: "22"``), duplicate keys, groups
naming unknown hosts or children, cycles in ``children``, a name used for both a host and a
group or tag, and any password key are :class:`~patchpilot.core.errors.ConfigError`\\ s naming the
file, the key path (``hosts.web-1.port``) and the reason. Names, addresses and users must match
strict patterns (see :mod:`patchpilot.core.inventory._validate`).

Ansible inventories
-------------------
INI and YAML inventories are read as Ansible reads them (see
:mod:`patchpilot.core.inventory._ansible`): groups, ``:vars``, ``:children``, host ranges
(``web[01:03]``, ``db-[a:c]``), ``host:port``, and ``group_vars/``/``host_vars/`` beside the
file. Variables combine as in Ansible (``all`` < parent groups < child groups < host; groups of
equal depth by ``ansible_group_priority`` then name). Mapped variables:

=================================================  =============================
``ansible_host`` / ``ansible_ssh_host``            ``address`` (default: the name)
``ansible_port`` / ``ansible_ssh_port``            ``port`` (default 22)
``ansible_user`` / ``ansible_ssh_user``            ``user``
``ansible_private_key_file`` /
``ansible_ssh_private_key_file``                   ``key_file``
``patchpilot_known_hosts``                          ``known_hosts``
``ansible_connection``                             ``local`` → local; ssh/paramiko/smart → ssh
``patchpilot_criticality``                         ``criticality``
``patchpilot_exposure``                            ``exposure``
``patchpilot_owner``                               ``owner``
``patchpilot_tags`` (list or "a,b")                added to ``tags``
``ansible_become`` (Ansible booleans)              ``become`` (default true)
``ansible_become_user``                            ``become_user`` (default root)
``ansible_ssh_common_args`` /
``ansible_ssh_extra_args``                         ``jump``: ``-J``, ``-o ProxyJump=``,
                                                   ``-o ProxyCommand="ssh -W %h:%p …"``
=================================================  =============================

``ansible_become_method`` other than ``sudo`` leaves the host out (listed in
:attr:`Inventory.skipped`): patchpilot escalates only with ``sudo -n``. A host with
``ansible_become=false`` (and a login user that is not root) or an ``ansible_become_user`` other
than root is loaded, but its privileged commands (package operations) are refused before they
run. Other options in the ssh arguments are ignored with a warning; host-key options
(``StrictHostKeyChecking=no``, ``UserKnownHostsFile=/dev/null``…) are never applied. A
ProxyCommand that is not ``ssh -W %h:%p`` is refused (never run).

``ansible-inventory --list`` JSON (also ``--export`` and dynamic inventory scripts' output) is
read as Ansible prints it: groups with ``hosts``/``children`` lists (and ``vars``), and
``_meta.hostvars`` with each host's merged variables, mapped as above.

Reaching hosts
--------------
With ``ssh.use_ssh_config`` (the default), ``~/.ssh/config`` (or ``ssh.config_file``) is read
with paramiko for each SSH host, matched against its address (default: its name) as
``ssh ADDRESS`` would: ``HostName`` replaces the address; ``Port``, ``User``, ``IdentityFile``
and ``ProxyJump`` (or an ``ssh -W %h:%p`` ProxyCommand) apply where the inventory sets none.
Jump hosts are looked up too (their own ``ProxyJump`` chains before them). ``Match exec`` and
any other ProxyCommand are refused; see :mod:`patchpilot.core.inventory._reach`.

When both spellings of a pair are set, the second one wins, as in Ansible's ssh plugin. Every
group a host belongs to (transitively, except ``all`` and ``ungrouped``) becomes a group and a
tag. Other variables are ignored; password variables are refused. Hosts with a connection
patchpilot cannot use (``winrm``, ``docker``…) are left out and listed in
:attr:`Inventory.skipped`.

Selecting hosts
---------------
``select_hosts(inventory, target, limit)``: the target is a host, a group, a tag, ``all``/None,
or ``local`` (the inventory's own ``local`` host, group or tag if it has one, else a built-in
host with transport ``local`` and address 127.0.0.1). ``limit`` is an Ansible host pattern
(``all``, ``web*``, ``~regex``, ``a:b``/``a,b``, ``&group``, ``!group``, ``web[0]``); see
:mod:`patchpilot.core.inventory._select`. A term matching nothing is an
:class:`~patchpilot.core.errors.UnknownTargetError`; results are in inventory order.

Format detection
----------------
``load_inventory(path, format="auto")`` decides by extension, then content (see
:func:`detect_format`): ``.ini`` → Ansible INI; a JSON object with ``_meta`` or list-valued
``hosts``/``children`` → ``ansible-inventory --list`` JSON; ``.yaml``/``.yml``/``.json`` →
YAML; no or another extension → INI if the first line is a ``[section]`` or the text is not a
YAML mapping. A YAML mapping with ``all:`` (or only group definitions) is Ansible YAML, one with
a top-level ``hosts:`` mapping is patchpilot's format. Pass ``format="patchpilot"``,
``"ansible-ini"``, ``"ansible-yaml"`` or ``"ansible-json"`` to skip detection.
"""

from patchpilot.core.inventory._ansible import expand_host_range
from patchpilot.core.inventory._load import (
    STDIN,
    InventoryFormat,
    detect_format,
    load_inventory,
    parse_inventory,
)
from patchpilot.core.inventory._model import Inventory
from patchpilot.core.inventory._select import LOCAL_HOST, LOCAL_TARGET, select_hosts, split_patterns
from patchpilot.core.inventory._validate import (
    validate_address,
    validate_group_name,
    validate_host_name,
    validate_key_file,
    validate_user,
)

__all__ = [
    "LOCAL_HOST",
    "LOCAL_TARGET",
    "STDIN",
    "Inventory",
    "InventoryFormat",
    "detect_format",
    "expand_host_range",
    "load_inventory",
    "parse_inventory",
    "select_hosts",
    "split_patterns",
    "validate_address",
    "validate_group_name",
    "validate_host_name",
    "validate_key_file",
    "validate_user",
]
