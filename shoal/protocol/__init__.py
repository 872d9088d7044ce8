"""Bytes ⇄ messages. Sans-I/O: nothing here touches sockets or event loops."""
