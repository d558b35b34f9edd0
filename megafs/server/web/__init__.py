"""The HTTP side of the local MEGA server: listeners (``listeners``), the request wrapper
(``request``), the route table and dispatcher (``routes``), fault application in one place
(``fault_apply``) and the endpoints (``ep_api``, ``ep_transfers``, ``ep_control``)."""
