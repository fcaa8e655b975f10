"""The engine on a Ray Serve cluster (``sfumato serve --ray``): replica.py runs on the cluster's
machines, remote.py in the front process (a worker slot per replica), deploy.py joins and deploys.
Imported only with ``--ray``; it needs the ``cluster`` extra (``ray[serve]``)."""
