"""The API commands of the local MEGA server: one handler per command (``account``, ``tree``,
``files``), the batch runner with the command table (``batch``) and the action-packet poll
(``sc``).  Handlers see a ``Ctx`` (``base``) and never HTTP."""
