"""Pure loss functions of arrays; each file holds one method's objective."""
