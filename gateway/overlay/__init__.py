"""The P2PSIP overlay: a Kademlia node, signed registration records, the mirror that
publishes the registry into the DHT, and the trust checks readers apply."""
