"""``adapterhub serve --ray``: engine replicas on Ray Serve, routed by adapter.

Optional extra (``pip install 'adapterhub[ray]'``); nothing imports Ray unless ``--ray``
is given, so this package's own ``__init__`` and :mod:`.options` stay Ray-free.

- :mod:`.options`: the CLI flags and the :class:`~.options.ReplicaSpec` a replica is built from;
- :mod:`.replica`: the Ray Serve deployment, one :class:`~adapterhub.serving.Engine` per replica,
  adapters multiplexed by ``name@version`` (Ray's multiplexing LRU owns eviction);
- :mod:`.client`: :class:`~.client.RayEngine`, what the unchanged Starlette app talks to;
- :mod:`.board`: a small actor where replicas post their stats and resident adapters;
- :mod:`.metrics`: per-replica Prometheus families at the ingress;
- :mod:`.cluster`: start (or join) Ray, deploy, and always shut down;
- :mod:`.deploy`: the application builder for ``serve deploy`` / KubeRay.

See docs/serving-ray.md.
"""
