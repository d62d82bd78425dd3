"""The shop's tables."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of the shop's models."""


class User(Base):
    """A customer."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))
    addresses: Mapped[list[Address]] = relationship(back_populates="user", order_by="Address.id")
    orders: Mapped[list[Order]] = relationship(back_populates="user", order_by="Order.id")


class Address(Base):
    """A postal address of a user."""

    __tablename__ = "addresses"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    city: Mapped[str] = mapped_column(String(100))
    user: Mapped[User] = relationship(back_populates="addresses")


class Order(Base):
    """An order placed by a user."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    total: Mapped[float] = mapped_column(Numeric(10, 2))
    user: Mapped[User] = relationship(back_populates="orders")
