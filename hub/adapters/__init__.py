"""One client per external system. Nothing above an adapter sees an httpx, zeep or lxml exception."""
